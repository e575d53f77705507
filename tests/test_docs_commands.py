"""The commands the docs show: every `iat` command line in README.md, deploy/README.md and docs/*.md parses with
the real CLI (each alternative of `a|b`, with and without each optional `[...]` group), every benchmark command
names a script that exists with the flags it is given, and the short data commands run exactly as written."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from iatcli.main import build_parser

REPO = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "deploy/README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
# Placeholders the docs use in synopsis lines, and a value of the right type for each.
PLACEHOLDERS = {"N": "2", "P": "data/x", "K": "temporal", "C": "configs/demo.yaml", "D": "x", "B": "out"}


INLINE = "inline"  # a command named in running text: its required arguments may be left out


def _lines(doc: str) -> list[tuple[str, int, str, str]]:
    """(doc, line number, command, "block" | "inline") of every command in its fenced shell blocks (continued
    lines joined) and inline code spans."""
    out = []
    in_block, pending, start = False, "", 0
    for no, raw in enumerate((REPO / doc).read_text().splitlines(), 1):
        if raw.strip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            cmd = re.sub(r"\s+#.*$", "", raw).strip()
            start = start if pending else no
            if cmd.endswith("\\"):
                pending += cmd[:-1] + " "
                continue
            cmd, pending = pending + cmd, ""
            out += [(doc, start, part.strip(), "block") for part in re.split(r"\s&&\s|\s\|\s", cmd) if part.strip()]
        else:
            out += [(doc, no, m, INLINE) for m in re.findall(r"`((?:\.venv/bin/)?(?:iat|python) [^`]+)`", raw)]
    return out


def _iat_argvs(cmd: str) -> list[list[str]] | None:
    """The argument vectors a documented `iat` line stands for; None when the line is no `iat` command."""
    if not re.match(r"^([A-Z_]+=\S*\s+)*(\.venv/bin/)?iat\s", cmd):
        return None
    words = shlex.split(re.sub(r"<[^>]+>", "x", cmd))
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # environment assignments before the command
        words = words[1:]
    if not words or words[0] not in ("iat", ".venv/bin/iat") or words[1:2] == ["..."] or "--debug" in words:
        return None
    text = " ".join(words[1:])
    groups = re.findall(r"\[([^\]]*)\]", text)
    base = re.sub(r"\s*\[[^\]]*\]", "", text)
    variants = [base] + [f"{base} {g}" for g in groups]
    argvs = []
    for v in variants:
        tokens = [[PLACEHOLDERS.get(a, a) for a in w.split("|")] if "|" in w else [PLACEHOLDERS.get(w, w)] for w in v.split()]
        argvs += [list(c) for c in itertools.product(*tokens)]
    return argvs


ALL = [line for doc in DOCS for line in _lines(doc)]


def test_the_docs_hold_iat_and_bench_commands() -> None:
    assert sum(_iat_argvs(c) is not None for _, _, c, _ in ALL) > 40
    assert sum("bench/" in c for _, _, c, _ in ALL) > 10


@pytest.mark.parametrize("doc,no,cmd,where", [x for x in ALL if _iat_argvs(x[2])], ids=lambda x: str(x)[:60])
def test_documented_iat_command_parses(doc: str, no: int, cmd: str, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in _iat_argvs(cmd) or []:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            if e.code == 0:  # a documented --help
                continue
            error = capsys.readouterr().err
            if where == INLINE and "the following arguments are required" in error:
                continue  # running text names the command; its block shows the arguments
            pytest.fail(f"{doc}:{no}: `iat {' '.join(argv)}` does not parse (from `{cmd}`): {error.strip().splitlines()[-1]}")
        assert callable(getattr(args, "func", None)), f"{doc}:{no}: `{cmd}` names no command"


@pytest.mark.parametrize("doc,no,cmd,where", [x for x in ALL if "bench/" in x[2] and "python" in x[2]], ids=lambda x: str(x)[:60])
def test_documented_bench_command_names_a_script_and_its_flags(doc: str, no: int, cmd: str, where: str) -> None:
    words = shlex.split(cmd)
    script = next(w for w in words if w.startswith("bench/"))
    source = (REPO / script).read_text() if (REPO / script).is_file() else None
    assert source is not None, f"{doc}:{no}: {script} does not exist"
    for flag in (w for w in words if w.startswith("--")):
        assert f'"{flag}"' in source, f"{doc}:{no}: {script} has no option {flag}"


def test_the_readme_data_commands_run_as_written(tmp_path: Path, iat_home: Path) -> None:
    """`iat generate ... --out data/synth` then `iat validate data/synth`, in a fresh folder, exactly as the README shows."""
    readme = {c for d, _, c, _ in ALL if d == "README.md"}
    commands = ["iat generate --dataset synthetic --out data/synth --users 2000 --seed 0", "iat validate data/synth"]
    assert set(commands) <= readme
    iat = str(Path(sys.executable).with_name("iat"))
    for c in commands:
        r = subprocess.run([iat, *shlex.split(c)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"`{c}` failed: {r.stdout[-2000:]} {r.stderr[-2000:]}"
    assert (tmp_path / "data" / "synth" / "schema.yaml").is_file()
