# The tcplens image: one static binary on an empty root, as
# deploy/kubernetes/tcplens-daemonset.yaml runs it.
#
#   docker build --build-arg VERSION=v0 -t registry.example.com/tcplens:v0 .
#
# deploy/deploy_test.go (TestImageRoot) builds the binary with the RUN line
# below and runs it in a read-only root that holds nothing else.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=(devel)
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -X main.version=${VERSION}" -o /out/tcplens ./cmd/tcplens

FROM scratch
COPY --from=build /out/tcplens /tcplens
ENTRYPOINT ["/tcplens"]
CMD ["serve"]
