"""The hosted checkout (design 0007): public, server-rendered payment pages."""
