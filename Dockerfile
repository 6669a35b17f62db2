# The app image: API, worker, migrations and the carrier simulators (docker-compose.yml).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code runs from /app (on sys.path as the working directory); not installed as a package.
COPY . .

RUN useradd --system --uid 10001 --home-dir /app app \
    && mkdir -p /data \
    && chown app /data
USER app

# Every service names its own command (docker-compose.yml); this one is the worker.
CMD ["python", "worker.py"]
