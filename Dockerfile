# The pipeline image used by docker-compose.yml (spendstream run / spendstream alerts).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY spendstream ./spendstream
COPY producers ./producers
COPY stream ./stream
COPY warehouse ./warehouse
COPY alerts ./alerts
RUN pip install --no-cache-dir -c constraints.txt '.[pipeline]'
# Not root: the workers need no privilege. /data (the warehouse) and /secrets (the ingest
# token) belong to this user, so named volumes mounted there start out writable by it.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /data spendstream \
    && mkdir -p /data /secrets && chown spendstream:spendstream /data /secrets
USER 10001:10001
ENV SPENDSTREAM_HOME=/data
VOLUME ["/data"]
ENTRYPOINT ["spendstream"]
