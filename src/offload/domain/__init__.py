"""Pure domain: task model, lifecycle, rules. No I/O, no imports from other layers."""
