# The SIMT emulator for a CMake target: CUDA sources compiled as C++ on the CPU, against the
# emulated runtime (test/simt/README.md). Usage:
#   include(test/simt/simt.cmake)
#   evit_simt_add(<target> <the .cu files>)
# The emulator is a plain list of sources (EVIT_SIMT_SOURCES) and one include directory
# (EVIT_SIMT_INCLUDE_DIR, first on the path, where cuda_runtime.h, cuda_fp16.h and cuda_bf16.h
# stand in for the toolkit's); it keeps no state that assumes one executable, so it links into
# shared objects such as the addon as well as into test programs.
set(EVIT_SIMT_DIR ${CMAKE_CURRENT_LIST_DIR})
set(EVIT_SIMT_INCLUDE_DIR ${EVIT_SIMT_DIR}/include)
set(EVIT_SIMT_SOURCES
  ${EVIT_SIMT_DIR}/src/fibers.cc
  ${EVIT_SIMT_DIR}/src/scheduler.cc
  ${EVIT_SIMT_DIR}/src/runtime.cc
  ${EVIT_SIMT_DIR}/src/memory.cc
  ${EVIT_SIMT_DIR}/src/streams.cc
  ${EVIT_SIMT_DIR}/src/twins.cc
  ${EVIT_SIMT_DIR}/src/kernel_names.cc
  ${EVIT_SIMT_DIR}/src/counting.cc)
# How a .cu file is compiled: as C++, device code for sm_90 in the same pass, the runtime header
# pre-included as nvcc does; no fused multiply-adds the source does not write.
set(EVIT_SIMT_CUDA_OPTIONS -x c++ -include cuda_runtime.h -Wno-unknown-pragmas -ffp-contract=off)
set(EVIT_SIMT_CUDA_DEFINITIONS EVIT_SIMT __CUDACC__ __CUDA_ARCH__=900)

function(evit_simt_add target)
  set_source_files_properties(${ARGN} PROPERTIES LANGUAGE CXX
    COMPILE_OPTIONS "${EVIT_SIMT_CUDA_OPTIONS}" COMPILE_DEFINITIONS "${EVIT_SIMT_CUDA_DEFINITIONS}")
  target_sources(${target} PRIVATE ${ARGN} ${EVIT_SIMT_SOURCES})
  target_include_directories(${target} BEFORE PRIVATE ${EVIT_SIMT_INCLUDE_DIR})
  target_compile_features(${target} PRIVATE cxx_std_17)
  find_package(Threads REQUIRED)
  target_link_libraries(${target} PRIVATE Threads::Threads ${CMAKE_DL_LIBS})
endfunction()
