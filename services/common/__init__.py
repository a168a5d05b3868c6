"""The shared service kit: infrastructure every service uses, no domain rules."""
