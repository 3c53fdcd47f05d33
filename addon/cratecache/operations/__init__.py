"""Operating it: the configuration addon (options, proxies.yaml loaded, reloaded and watched), the upkeep addon
(the status server and page, request counts, the store's upkeep), metrics, activity, cache listing and purge,
reloads, the worker launcher and its command lines and signals, process exit."""
