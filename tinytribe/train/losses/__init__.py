"""Loss functions: each returns a dict of named terms; recipes weight, sum and log them."""
