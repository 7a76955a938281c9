# Every dependency is a Debian package; scripts/setup.sh installs them.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)
find_package(yaml-cpp REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
pkg_check_modules(LIBNL REQUIRED IMPORTED_TARGET libnl-3.0 libnl-route-3.0)
pkg_check_modules(SQLITE REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(NFTABLES REQUIRED IMPORTED_TARGET libnftables)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(OpenSSL REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# gRPC for long-running processes: shared libraries.
add_library(trellis_grpc_shared INTERFACE)
target_link_libraries(trellis_grpc_shared INTERFACE gRPC::grpc++_unsecure protobuf::libprotobuf)

# gRPC for the CNI binary, which runs once per pod start: static archives, so
# the process maps no gRPC/abseil/protobuf shared objects and runs no dynamic
# relocation for them (see docs/BENCHMARKS.md for the measured difference).
add_library(trellis_grpc_static INTERFACE)
if(TRELLIS_STATIC_CNI)
  set(_static_libs grpc++_unsecure grpc_unsecure gpr upb address_sorting cares re2 protobuf z)
  set(_paths)
  foreach(_l IN LISTS _static_libs)
    find_library(_p_${_l} NAMES lib${_l}.a REQUIRED)
    list(APPEND _paths ${_p_${_l}})
  endforeach()
  get_filename_component(_archive_dir ${_p_grpc_unsecure} DIRECTORY)
  file(GLOB _absl_archives ${_archive_dir}/libabsl_*.a)
  target_link_libraries(trellis_grpc_static INTERFACE
    -Wl,--start-group ${_paths} ${_absl_archives} -Wl,--end-group Threads::Threads ${CMAKE_DL_LIBS} rt)
else()
  target_link_libraries(trellis_grpc_static INTERFACE trellis_grpc_shared)
endif()
