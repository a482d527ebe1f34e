# One image for every role: `imagesmith serve`, `imagesmith serve --no-worker`, `imagesmith worker`.
# A worker for remote models only needs no torch: `pip install "imagesmith[server]"`.
# TORCH picks the build: the default CPU wheel, or e.g.
#   --build-arg TORCH="torch --index-url https://download.pytorch.org/whl/cu124"  for NVIDIA GPUs.
FROM python:3.11-slim
ARG TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 IMAGESMITH_DATA_DIR=/data
WORKDIR /app
RUN pip install ${TORCH}
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[server,diffusers]"
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["imagesmith"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
