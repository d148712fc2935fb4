"""The ``/v1`` routes, one module per resource; ``api.app`` includes their routers."""
