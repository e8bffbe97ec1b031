import H2TCore

/// Namespace placeholder until the module's first real file lands.
enum H2TPipelineModule {}
