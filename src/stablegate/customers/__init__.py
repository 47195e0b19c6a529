"""Customers: the first merchant-owned API resource, and the template for the others."""
