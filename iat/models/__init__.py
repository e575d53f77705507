"""Models: source models (temporal, user-order + SIT), the HGAQ tokenizer, downstream rankers, shared layers."""
