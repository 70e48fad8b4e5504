# The pipeline image used by docker-compose.yml (spendstream run / spendstream alerts).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY spendstream ./spendstream
COPY producers ./producers
COPY stream ./stream
COPY warehouse ./warehouse
COPY alerts ./alerts
RUN pip install --no-cache-dir -c constraints.txt '.[pipeline]'
ENV SPENDSTREAM_HOME=/data
VOLUME ["/data"]
ENTRYPOINT ["spendstream"]
