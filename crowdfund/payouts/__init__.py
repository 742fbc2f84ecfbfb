"""Box-office reports, the payout waterfall, payout runs and statements."""
