"""`python -m cratecache.config --schema`: print the JSON Schema of proxies.yaml (proxies.schema.json)."""

import argparse
import json

from .models import schema

parser = argparse.ArgumentParser(prog="python -m cratecache.config", description=__doc__)
parser.add_argument("--schema", action="store_true", required=True, help="print the JSON Schema of proxies.yaml")
parser.parse_args()
print(json.dumps(schema(), indent=2, ensure_ascii=False))
