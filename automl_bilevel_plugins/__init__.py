"""Built-in plugins of automl_bilevel (import name ``automl_bilevel_plugins``).

They are registered through the ``automl_bilevel`` entry-point group exactly like third-party
plugins; the host never imports them by name.
"""
