"""The service-recovery backend: four services (intake, escalation, compensation, followup) and their kit."""
