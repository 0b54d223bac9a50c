"""Sources: one module per resource kind, behind one interface."""
