# Every dependency is a Debian package; scripts/setup.sh installs them.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Protobuf REQUIRED)
find_package(absl CONFIG REQUIRED)
pkg_check_modules(LIBNL REQUIRED IMPORTED_TARGET libnl-3.0 libnl-route-3.0)
pkg_check_modules(SQLITE REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(NFTABLES REQUIRED IMPORTED_TARGET libnftables)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(OpenSSL REQUIRED)

# The API speaks gRPC over HTTP/2 through nghttp2 (core/rpc); the gRPC library
# itself is only a test dependency (tests/netns/api_test.cc calls the daemon
# with a stock grpc++ client).
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
