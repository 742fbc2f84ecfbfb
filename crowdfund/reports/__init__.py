"""Finance pages and exports: read only."""
