"""Recovery: one-time codes and the password-reset flow."""
