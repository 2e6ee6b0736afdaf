# Sourced by scripts that drive the test tools: puts the virtual environment
# that the README's test command (scripts/test.sh) installs the PyPI tools
# into (aws, boto3, rclone, s3cmd, moto, componentize-py...) first on the
# PATH.
SHARDGATE_TEST_VENV=${SHARDGATE_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/shardgate/test-venv}
if [ -d "$SHARDGATE_TEST_VENV/bin" ]; then
  export PATH="$SHARDGATE_TEST_VENV/bin:$PATH"
fi
# awscrt (botocore's CRC32C and CRC64NVME), kept out of the virtual
# environment: the checksum test puts it on its PYTHONPATH.
export SHARDGATE_TEST_CRT=${SHARDGATE_TEST_CRT:-$SHARDGATE_TEST_VENV-crt}
