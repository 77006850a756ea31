# The source-mixpanel-export image, built the way Airbyte builds its Python connectors.
#
# Base: Airbyte's python-connector-base 4.0.2 (Python 3.11, the version the connector is tested on;
# it creates the non-root user `airbyte`, uid 1000, and owns /airbyte to it). Pinned by digest: the
# value airbytehq/airbyte's airbyte-integrations/connectors/source-google-drive/metadata.yaml names
# under connectorBuildOptions.baseImage. metadata.yaml must name the same image and digest.
FROM docker.io/airbyte/python-connector-base:4.0.2@sha256:9fdb1888c4264cf6fee473649ecb593f56f58e5d0096a87ee0b231777e2e3e73

WORKDIR /airbyte/integration_code

# Only what the package needs: keeps the layer cache stable when tests or docs change.
COPY setup.py pyproject.toml main.py ./
COPY source_mixpanel_export ./source_mixpanel_export
RUN pip install --no-cache-dir .

# The connector needs no root: it writes only to the system temp directory (window spill files).
USER airbyte

ENV AIRBYTE_ENTRYPOINT="python /airbyte/integration_code/main.py"
ENTRYPOINT ["python", "/airbyte/integration_code/main.py"]

LABEL io.airbyte.name=airbyte/source-mixpanel-export
LABEL io.airbyte.version=0.1.0
