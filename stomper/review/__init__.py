"""``stomper review``: a model reviews each file; findings placed by their quotes, kept few."""
