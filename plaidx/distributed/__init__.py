"""Sharded indexes: one codec, many ordinary plaidx indexes, built and searched in-process or on Ray."""
