"""The audit: recounts closed hours from the log with the projector's own fold, checks what is served."""
