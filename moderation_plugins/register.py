"""Registration module of this pack (its components arrive with their issue)."""
