"""Job runners: backup, restore, and the work around them."""
