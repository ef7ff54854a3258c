"""The sans-IO request engine of straico-gateway."""
