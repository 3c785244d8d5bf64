"""HTTP layer: one module per resource, a shared BaseHandler, and the marshmallow schemas."""
