"""Operating it: the status server and page, metrics, activity, cache listing and purge, reloads, the worker
launcher and its command lines and signals, process exit."""
