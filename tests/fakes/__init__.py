"""Test doubles that behave like the real thing over the network (see rpc_proxy)."""
