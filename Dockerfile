# One image for every pushgate program (gateway, proxy, consumer, ctl):
# built from this repository on Debian 12, the platform the project targets.
FROM debian:12-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config ca-certificates \
      libevent-dev libwslay-dev libhiredis-dev libmariadb-dev libjansson-dev libjemalloc-dev libssl-dev \
      libjwt-dev libinih-dev libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN make BUILD=release all && make install PREFIX=/usr/local && rm -rf build

# Settings come from PUSHGATE_<KEY> environment variables (see config/*.ini).
CMD ["pushgate-gateway", "--help"]
