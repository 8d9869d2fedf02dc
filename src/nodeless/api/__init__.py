"""Pure data and algorithms about Kubernetes objects: kinds, selectors, patches, errors."""
