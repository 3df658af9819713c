"""Results history: every session's results kept in a database (SQLite or PostgreSQL), trends, and a
gate that judges a result against its model's own noise."""
