"""The HTTP surface: the middleware stack, the public routes, the key API and the admin listener."""
