"""The Nodeless scheduler: serverless sizing, zone and capacity choice, binding."""
