"""chute-k8s: render, apply and watch chute's Async APIs on Kubernetes.

:func:`chute_k8s.render.render` gives every object (plain dicts) an API file needs: per API a
Deployment with the dequeuer sidecar and a KEDA ScaledObject; per namespace the gateway, its
Service and autoscaler, the ConfigMaps and the monitoring objects.
:func:`chute_k8s.output.to_yaml` prints them; :func:`chute_k8s.cluster.load_cluster` reads
the cluster file. ``chute render|deploy|delete|status`` are the commands. Importing this
package imports nothing else, so that loading the plugin stays cheap. See docs/kubernetes.md.
"""
