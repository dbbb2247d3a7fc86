"""Base services of the controller: the state store (SQLAlchemy) and the model store."""
