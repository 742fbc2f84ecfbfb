"""Development only: the demo seed, the localstripe starter and the dev server. Production never imports it."""
