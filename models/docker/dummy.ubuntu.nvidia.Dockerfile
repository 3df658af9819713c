# CONTEXT {'gpu_vendor': 'NVIDIA', 'guest_os': 'UBUNTU'}
# A stand-in for a ROCm/CUDA image: the zoo must build with no registry, so the base is the
# offline busybox image made by tools/base-image.sh. Override with --madengine-build-arg BASE_DOCKER=...
ARG BASE_DOCKER=pytest-madengine/busybox:latest
FROM $BASE_DOCKER
ARG MAD_SYSTEM_GPU_ARCHITECTURE=unknown
RUN echo "built for $MAD_SYSTEM_GPU_ARCHITECTURE (NVIDIA)" > /etc/madengine-build
