"""The Kubernetes backend: burst workers as pods (backend) made from one manifest (podspec)."""
