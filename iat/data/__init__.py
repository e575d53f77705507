"""Data sets in the instance-log contract: synthetic generator, MovieLens-100k, any parquet/csv log."""
