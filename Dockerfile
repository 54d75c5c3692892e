# The serving-only image: python -m keel.serve over ONNX Runtime, without PyTorch or pandas.
#
#   keel export runs/penguins                                   # where keel is fully installed
#   docker build --build-arg MODEL=runs/penguins -t keel-penguins .
#   docker run --rm -p 127.0.0.1:8000:8000 keel-penguins
#
# The two pip installs are the ones tests/integration/test_serving_install.py runs (it checks that
# they stay the same): the serving requirements pinned by constraints.txt, then keel with --no-deps.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    OMP_NUM_THREADS=1

WORKDIR /opt/keel
# Requirements before sources, so that a change to keel's code reuses the dependency layer.
COPY serve-requirements.txt constraints.txt ./
RUN python -m pip install --no-cache-dir -c constraints.txt -r serve-requirements.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip install --no-cache-dir --no-deps . && rm -rf build src

# A model directory with model.onnx attached (`keel export` writes it); a path inside the build context.
ARG MODEL=runs/model
COPY ${MODEL} /model

RUN useradd --system --no-create-home keel
USER keel
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2)"]
# 0.0.0.0 inside the container: which host addresses reach it is `docker run -p`'s choice.
CMD ["python", "-m", "keel.serve", "/model", "--host", "0.0.0.0"]
