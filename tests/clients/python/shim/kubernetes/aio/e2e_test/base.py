"""The asyncio client's counterpart of kubernetes.e2e_test.base: the
configuration of the server under test, from the KUBECONFIG variable."""

import asyncio
import os

from kubernetes.aio import config
from kubernetes.aio.client import configuration


def get_e2e_configuration():
    conf = configuration.Configuration()
    # Called from setUpClass, outside any event loop.
    asyncio.run(
        config.load_kube_config(
            config_file=os.environ["KUBECONFIG"], client_configuration=conf
        )
    )
    return conf
