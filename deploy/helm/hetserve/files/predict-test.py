"""`helm test`: one prediction through the gateway's Service (run by the gateway image's Python).

POST /v1/predict with the Shirt example image shipped in the hetgateway package, with the
first API key when the gateway has keys (the same Secret file it reads). Retries while the
gateway is unreachable or not ready (503) for HETSERVE_TEST_TIMEOUT_S; any other answer but
200, or an answer without a prediction, fails at once.
"""

import base64
import json
import os
import pathlib
import sys
import time
import urllib.error
import urllib.request

import hetgateway

RETRIED_STATUSES = (429, 502, 503, 504)
url = os.environ["HETSERVE_TEST_URL"].rstrip("/") + "/v1/predict"
image = pathlib.Path(hetgateway.__file__).with_name("static") / "examples" / "6_shirt.png"
body = json.dumps({"inputs": [{"image": base64.b64encode(image.read_bytes()).decode()}]})
headers = {"Content-Type": "application/json"}
keys_file = os.environ.get("HETSERVE_API_KEYS_FILE")
if keys_file:
    lines = pathlib.Path(keys_file).read_text().splitlines()
    key = next(k.strip() for k in lines if k.strip() and not k.lstrip().startswith("#"))
    headers["Authorization"] = f"Bearer {key}"
deadline = time.monotonic() + float(os.environ.get("HETSERVE_TEST_TIMEOUT_S", "60"))
while True:
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            document = json.load(answer)
        break
    except urllib.error.HTTPError as error:
        problem = f"{url}: {error.code} {error.read()[:300]!r}"
        if error.code not in RETRIED_STATUSES:
            sys.exit(f"FAIL {problem}")
    except (urllib.error.URLError, OSError) as error:
        problem = f"{url}: {error}"
    if time.monotonic() > deadline:
        sys.exit(f"FAIL after retries, last: {problem}")
    time.sleep(2)
result = document["results"][0]
top = result["predictions"][0]
if not 0.0 <= top["probability"] <= 1.0:
    sys.exit(f"FAIL probability out of range: {top}")
print(f"OK {document['model']['name']}: {top['label']} p={top['probability']:.3f}, "
      f"predictive entropy {result['uncertainty']['predictive_entropy']:.3f} nats")
