"""Test support for qwenvl and its integrations: the pytest plugin (`qwenvl_testkit.plugin`), test helpers
(`qwenvl_testkit.helpers`) and synthetic scanned pages with known truth (`qwenvl_testkit.synthetic_pages`)."""
