FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 MLFLOW_DISABLE_TELEMETRY=true WANDB_MODE=offline HF_HUB_OFFLINE=1
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# The CPU wheel of torch; on a GPU host use the CUDA wheel index instead.
RUN pip install -c constraints.txt torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install -c constraints.txt '.[minilm,dashboard,postgres]'
