"""Every view says in one line what it shows or does, as Flask's own tutorial does."""


def test_every_view_has_a_one_line_docstring(app):
    undocumented = sorted(endpoint for endpoint, view in app.view_functions.items()
                          if endpoint != "static" and not (view.__doc__ or "").strip())
    assert undocumented == []
    assert len(app.view_functions) > 30  # the routes were found, not an empty map
