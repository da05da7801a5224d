"""chute_k8s: a placeholder; it will hold Kubernetes rendering (issue 9). No code yet."""
