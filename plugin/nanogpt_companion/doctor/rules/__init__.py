"""The doctor's rules, one module per rule group; ``doctor.engine`` runs them in a fixed order."""
