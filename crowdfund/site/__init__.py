"""The web layer: Flask views, forms and the request glue, above every domain."""
